"""The LLM product: platforms (OpenAI-compatible endpoints and their keys), the shared rate
limiter, the response cache, documents, and the runtime that makes the calls as job kinds.
It builds on the queue core and never imports the CLI or the web app."""
