"""The Responses API's turns: threads, records and outcomes, with no HTTP in them."""
