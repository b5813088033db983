"""Exchange access: the Binance USD-M futures client, the filter cache, and target selection."""
