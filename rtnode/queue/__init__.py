"""The queues: Huey carries "run this stage run" messages to gpu and cpu workers; the scheduler
decides what goes in, in which order, and keeps the index the only record of state."""
