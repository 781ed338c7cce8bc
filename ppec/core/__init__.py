"""Code both sides share: errors, units, clock, signatures. Stdlib only."""
