"""The models of what a user asks for: pydantic, no OS calls."""
