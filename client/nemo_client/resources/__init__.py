"""The client's resources, as in the OpenAI SDK: ``chat``, ``completions`` and ``models``. Each module holds the
async implementation and the sync class that runs it on the client's loop thread."""
