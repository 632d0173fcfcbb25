"""Providers: one module per backend behind one small interface (read, write, missing targets, errors)."""
