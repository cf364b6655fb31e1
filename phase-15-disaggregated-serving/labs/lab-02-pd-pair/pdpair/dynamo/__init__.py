"""NVIDIA Dynamo in front of the same pair: the launcher (frontend + workers from the launch plans) and the
shims its workers run under on this CPU venv."""
