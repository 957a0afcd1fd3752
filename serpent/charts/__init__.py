"""Altair charts, one submodule per topic. They work in Jupyter, Colab and static pages, and export PNG/SVG offline
(vl-convert)."""

from .export import save_chart, chart_bytes
from .induction import head_score_chart, induction_scores_chart, icl_chart, attention_chart
from .clusters import cluster_births_chart
from .llc import llc_curve_chart, llc_with_scores_chart, loss_trace_chart, calibration_chart
from .serpent import (serpent_chart, serpent_snapshot, small_multiples, spacing_fin_chart, token_bars, save_png,
                      save_svg)
from .susceptibility import response_matrix_chart, response_pca_chart
from .tokens import token_layout, token_strip
from .training import loss_curves_chart
