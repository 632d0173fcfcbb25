"""Views of plans and results: text (rich), Markdown (PR comments) and JSON (the plan file)."""
