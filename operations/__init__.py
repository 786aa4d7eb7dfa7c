"""What officers and operators do, on top of the engine: import lists, take steps, report, run the demo."""
