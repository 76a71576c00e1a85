"""User transforms for the transform tests, loaded by name as users do."""
