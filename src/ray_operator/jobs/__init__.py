"""The job runner: stage a script, submit it with an id chosen first, follow it, archive it."""
