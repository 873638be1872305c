"""Data catalogs (GPU types, models) loaded into frozen, typed models."""
