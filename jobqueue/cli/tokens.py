"""`jobqueue tokens create|list|revoke`: API tokens for the web app."""

from __future__ import annotations

import click

from jobqueue.cli.common import ID, UserError, connection, lines, print_rows


@click.group()
def tokens() -> None:
    """API tokens: shown once at creation, stored hashed."""


@tokens.command("create")
@click.option("--owner", required=True, help="Whose jobs the token creates and sees.")
@click.option("--scopes", default="read,write",
              help="Comma-separated: read, write, admin, viewer (the dashboard, read-only).")
@click.option("--rate-limit", type=click.IntRange(1, 2**31 - 1), default=300,
              help="Read requests (GET, SSE, ?wait) per minute.")
@click.option("--write-rate-limit", type=click.IntRange(1), default=None,
              help="Write requests per minute, a bucket of their own.  [default: --rate-limit]")
@click.option("--note", default=None)
def tokens_create(owner, scopes, rate_limit, write_rate_limit, note) -> None:
    """Create a token and print it (it cannot be shown again)."""
    from jobqueue import tokens as token_store

    with connection() as conn:
        try:
            token, row = token_store.create(conn, owner, [s.strip() for s in scopes.split(",")
                                                         if s.strip()], rate_limit, note,
                                      write_rate_limit)
        except ValueError as exc:
            raise UserError(str(exc)) from None
    click.echo(f"token {row['id']} for {owner} ({', '.join(row['scopes'])}, "
               f"{rate_limit}/min reads, {write_rate_limit or rate_limit}/min writes); keep it "
               "now, it is not shown again:", err=True)
    click.echo(token)


@tokens.command("list")
@click.option("--json", "as_json", is_flag=True)
def tokens_list(as_json) -> None:
    """Every token: id, prefix, owner, scopes, rate limit, state and last use (never the
    token itself, which is stored only hashed)."""
    from jobqueue import tokens as token_store

    with connection() as conn:
        rows = token_store.list_tokens(conn)
    print_rows(rows, as_json, None, lines(
        lambda r: f"{r['id']}  {r['prefix']}...  {r['owner']}  {','.join(r['scopes'])}  "
                  f"{r['rate_limit']}/min  {'revoked' if r['revoked_at'] else 'active'}  "
                  f"last used {r['last_used_at'] or 'never'}"))


@tokens.command("revoke")
@click.argument("token_id", type=ID)
def tokens_revoke(token_id: int) -> None:
    """Revoke token TOKEN_ID: requests with it are refused from now on."""
    from jobqueue import tokens as token_store

    with connection() as conn:
        if not token_store.revoke(conn, token_id):
            raise UserError(f"token {token_id}: no such active token")
    click.echo(f"token {token_id}: revoked")

