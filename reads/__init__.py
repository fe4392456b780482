"""The read model: every ClickHouse query behind the Management API, the analyst API and charts."""
