"""Reports: plots, ROC curves and contact sheets (matplotlib Agg backend, atomic PNG writes)."""
