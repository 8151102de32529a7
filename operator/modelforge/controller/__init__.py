"""The kopf shell: observe children, call the pure lifecycle, apply its decision, patch status."""
