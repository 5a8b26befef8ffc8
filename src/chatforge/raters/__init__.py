"""Raters: simulated raters that encode the behaviour spec as code, and panels of them."""
