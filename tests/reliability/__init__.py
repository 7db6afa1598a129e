"""Reliability and security campaign (issue 5): crash, I/O-fault, fuzz, concurrency,
hostile-input, naming and typed-error figures. Each test prints ``FIGURE {json}``."""
