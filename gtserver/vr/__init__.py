"""VR rooms over WebSocket (PROTOCOLS.md §1): options, rooms and ticks, adapter, wire, CSV."""
