/** Replaces the password of any postgres URL inside `text` with `***`. */
export function redactUrls(text: string): string {
  return text.replace(/(postgres(?:ql)?:\/\/[^:/@\s]*:)[^@\s]*@/gi, '$1***@')
}

/** Removes every occurrence of a known secret from `text`. */
export function redactSecret(text: string, secret: string | undefined): string {
  let out = redactUrls(text)
  if (secret) {
    out = out.split(secret).join('***')
    const encoded = encodeURIComponent(secret)
    if (encoded !== secret) out = out.split(encoded).join('***')
  }
  return out
}
