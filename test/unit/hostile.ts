/** Hostile strings: shell and nft metacharacters, command substitution, paths, unicode, control chars. */
export const HOSTILE_STRINGS: string[] = [
  "", " ", "a b", "br0;reboot", "br0&&id", "br0||id", "br0|id", "br0&", "$(id)", "`id`", "${IFS}", "$HOME", "br$0",
  "br0'", "br0\"", "br0\\", "br0\n", "\nbr0", "br0\r", "br0\t", "br0\0", "/", "../etc", "br/0", "br0:1", "br:0",
  "aaaaaaaaaaaaaaaa", "abcdefghijklmnopqrstuvwxyz", "brü0", "бр0", "br\u200b0", "😀", "br0#", "#br0", "br0;", "{br0}",
  "br0*", "br?", "[br0]", "br0>x", "<br0", "br0!", "-rf", "--help", "~", "br0%", "br0@", "br0,br1", "br0=1", "(br0)",
  "br0^", "'; drop table --", "\u0007", "br0\u0085",
  // Hidden names: a state file or profile named ".x" escapes the `*` globs that list them (#14).
  ".", "..", ".br0", ".hidden",
];
