"""memlab in Jupyter: magics, rich reprs, holder attribution in notebook terms, and widgets."""
