"""Exchange access: the Binance USD-M futures client, the filter cache, and target selection."""

from shared.exchange.lazy_binance import defer_package_init

defer_package_init()
