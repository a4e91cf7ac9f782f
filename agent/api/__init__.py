"""The HTTP API (FastAPI, served by uvicorn in a thread of the agent process).

Nothing here is imported unless ``api.enabled``: FastAPI and uvicorn load lazily.
"""
