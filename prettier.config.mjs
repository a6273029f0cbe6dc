// printWidth 180: of the widths 150-220 tried, the reformat at 180 touched the fewest existing
// lines (the code was written to about that width). Everything else is prettier's default,
// which the code already follows: double quotes, semicolons, trailing commas.
/** @type {import("prettier").Config} */
export default { printWidth: 180 };
