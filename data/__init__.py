"""Package data: the bundled demo model (installed as minibit.data)."""
