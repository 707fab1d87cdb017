"""Ultimate tic-tac-toe over WebSocket (PROTOCOLS.md section 2): options, matchmaking, adapter."""
