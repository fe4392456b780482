"""The contracts: event Structs and their codec (events.py), one document per topic with example
payloads (topics/), and the ClickHouse DDL (ddl.py). They know nothing of the code that uses them."""
