"""Altair charts, one submodule per topic. They work in Jupyter, Colab and static pages, and export PNG/SVG offline
(vl-convert)."""
