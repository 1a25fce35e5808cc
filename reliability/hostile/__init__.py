"""Hostile clients against a real `feedback-server` process: shared by tests/hostile and the
`hostile` reliability scenario, so both damage the server the same way and judge it alike."""
