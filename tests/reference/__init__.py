"""crossling's vectorised methods against straightforward re-implementations of the references they follow."""
