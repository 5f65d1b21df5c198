// Who may see a session or an image job. With auth on, what an API key creates is that key's: to any
// other key it does not exist (the same answer as for an unknown id). Without auth, clients are
// addresses, and one address may be a whole NAT, a proxy or this machine, so nothing is hidden by address.

/** Is this GatewayContext.client an API key (auth on), rather than an address? */
export const isKeyClient = (client: string | undefined): boolean => client?.startsWith('key:') === true;

/** Is what `owner` created hidden from `asker`? An undefined asker is the gateway itself, which sees everything. */
export const hiddenFrom = (owner: string | undefined, asker: string | undefined): boolean => asker !== undefined && isKeyClient(owner) && owner !== asker;
