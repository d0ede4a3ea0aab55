"""The store's queries: each function takes the session, then keyword-only arguments."""
