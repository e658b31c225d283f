"""HTTP glue: API Gateway events and Lambda Web Adapter requests in, responses out.

errors.py is the one place where an error becomes a status, body and headers, for both."""
