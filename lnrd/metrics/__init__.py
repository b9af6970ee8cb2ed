"""Sample-quality metrics of generated data (see each module)."""
