"""What the user describes: validated, frozen data. Specs know nothing of analyses."""
