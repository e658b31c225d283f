"""HTTP glue: API Gateway events and Lambda Web Adapter requests in, responses out.

The one place where a ClaudeError becomes a status, body and headers."""
