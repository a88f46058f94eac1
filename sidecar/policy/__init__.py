"""Policy files: the model (what a file may say), the loader and the compiled store."""
