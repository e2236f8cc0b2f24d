"""Where records go once a handler has them, a module each: the terminal (terminal.py: show(),
text lines or --json), a NATS server for more bots (nats.py: --publish), and Alpaca's protocol
to your other bots (serve.py: --serve, through server/relay.py)."""
