"""The EOT game API (PROTOCOLS.md section 3): options, the lobby of game tables, the protocol."""
