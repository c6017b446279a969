"""Local mode: the real handlers against an embedded AWS (moto) on this machine. Never deployed."""
