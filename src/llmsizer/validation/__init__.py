"""Published measurements (cited) and the runner that prints llmsizer's error against them."""
