"""mediarouter control process: command line, settings, worker supervision, signaling and rooms."""
