"""The EOT game API (PROTOCOLS.md section 3): JSON requests over TCP or TLS."""
