"""Plain HTTP APIs: the local echo API that stands in for one in tests and in the demo."""
