"""Rendering and export: Rich tables, JSON / CSV / Markdown, plots. The only place units are scaled."""
