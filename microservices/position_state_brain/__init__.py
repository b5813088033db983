"""Position-state brain (P3.3): exchange-truth permits for every executable plan."""
