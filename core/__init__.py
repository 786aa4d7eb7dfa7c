"""Cross-cutting pieces: settings, logging and the embedded stack."""
