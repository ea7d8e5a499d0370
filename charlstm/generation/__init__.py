"""Writing reviews: settings, seeded sampling, streaming, and loading a generator."""
