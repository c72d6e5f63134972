"""Pictures of attention: terminal text, matplotlib figures, a self-contained HTML page."""
