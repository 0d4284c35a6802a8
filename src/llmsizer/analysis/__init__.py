"""Pure functions from specs (and the op graph) to results. They print nothing and read no files."""
