"""The local web page and its JSON API (`llmsizer serve`); standard library only."""
