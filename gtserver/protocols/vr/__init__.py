"""VR rooms over WebSocket (PROTOCOLS.md §1): the adapter, its wire format, the CSV file."""
