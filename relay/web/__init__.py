"""The admin listener: moderation pages, rule test page, metrics and health (aiohttp)."""
